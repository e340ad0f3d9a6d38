// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * The kernel side of ptags: every task's tag-set ID and container ID live
 * in task storage, and these programs copy them on fork, prune them on
 * exec and account containers on exit, so that nothing depends on user
 * space seeing an event in time.
 *
 * Each task's state is only ever read or written whole under its spin
 * lock (user space uses BPF_F_LOCK), so a fork never copies half of a
 * concurrent update.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "intf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define ESRCH 3
#define EBUSY 16
#define PF_EXITING 0x4
/* __state of a task that fork has not finished making (sched_fork sets
 * it, wake_up_new_task clears it, after the fork tracepoint). */
#define TASK_NEW 0x800
#define ENOMEM 12
#define USER_HZ 100
/* One live and one pending member, in a container's `members` word. */
#define PTAGS_MEMBER_LIVE 1LL
#define PTAGS_MEMBER_PENDING (1LL << PTAGS_MEMBER_PENDING_SHIFT)
/* The daemon's limits.max_depth may be at most this. */
#define MAX_DEPTH 64
#define NSEC_PER_TICK (1000000000ULL / USER_HZ)

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ptags_task);
} task_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ptags_container);
} containers SEC(".maps");

/* The setns policy, keyed by the mount namespace's 64-bit ID (ns_id),
 * which the kernel never reuses: an inode number is reused as soon as its
 * namespace is freed, and could hand a container's identity to whoever
 * makes the next namespace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ptags_join);
} joins SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ptags_config);
} ptags_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PTAGS_LOST_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Exec and exit events a container's own audit copy asked for, by
 * container ID (its own and its nested containers'): a container that
 * asked for nothing costs one failed lookup at each exec and exit of its
 * tasks, and host tasks none. Written by the daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} copy_events SEC(".maps");

/* Exec, exit and join events. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Drop events alone: one container's many exits can never crowd out
 * another container's end. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} drops SEC(".maps");

/* Give the skeleton the shared types and constants, so that Rust never
 * copies them by hand. */
struct ptags_event ptags_event_type;
struct ptags_set_args ptags_set_args_type;
struct ptags_facts_args ptags_facts_args_type;
struct ptags_peer_args ptags_peer_args_type;
struct ptags_task_row ptags_task_row_type;
struct ptags_join ptags_join_type;
enum ptags_layout ptags_layout_type;
enum ptags_task_flags ptags_task_flags_type;
enum ptags_event_kind ptags_event_kind_type;
enum ptags_event_mask ptags_event_mask_type;
enum ptags_lost_reason ptags_lost_reason_type;
enum ptags_members ptags_members_type;
enum ptags_set_ops ptags_set_ops_type;
enum ptags_ns_slot ptags_ns_slot_type;
enum ptags_ns_seen ptags_ns_seen_type;

struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
void bpf_task_release(struct task_struct *p) __ksym;

static void count_lost(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&lost, &reason);

	/* Atomic: the sleepable setter can be preempted on this CPU by a
	 * tracepoint program that counts too. */
	if (n)
		__sync_fetch_and_add(n, 1);
}

static bool events_enabled(__u32 bit)
{
	__u32 zero = 0;
	struct ptags_config *c = bpf_map_lookup_elem(&ptags_config, &zero);

	return c && (c->event_mask & bit);
}

/* Whether an exec or exit event of a task in container `contid` is
 * wanted: by the host's trail, or by a container's copy. */
static bool process_event_wanted(__u32 bit, __u64 contid)
{
	__u32 *mask;

	if (events_enabled(bit))
		return true;
	mask = bpf_map_lookup_elem(&copy_events, &contid);
	return mask && (*mask & bit);
}

/* The lost counter of an event kind whose event found the ring full. */
static __u32 lost_reason_of(__u32 kind)
{
	switch (kind) {
	case PTAGS_EVENT_DROP:
		return PTAGS_LOST_RINGBUF_DROP;
	case PTAGS_EVENT_EXEC:
		return PTAGS_LOST_RINGBUF_EXEC;
	case PTAGS_EVENT_EXIT:
		return PTAGS_LOST_RINGBUF_EXIT;
	case PTAGS_EVENT_NS:
		return PTAGS_LOST_RINGBUF_NS;
	case PTAGS_EVENT_DEVICE:
		return PTAGS_LOST_RINGBUF_DEVICE;
	default:
		return PTAGS_LOST_RINGBUF_JOIN;
	}
}

/* Room for an event of `kind` in its ring; NULL (counted) when full. */
static __always_inline struct ptags_event *reserve(__u32 kind)
{
	bool drop = kind == PTAGS_EVENT_DROP;
	struct ptags_event *e = bpf_ringbuf_reserve(drop ? (void *)&drops : (void *)&events, sizeof(*e), 0);

	if (!e)
		count_lost(lost_reason_of(kind));
	return e;
}

/* Fills the part of an event every kind has: the task `t` and its
 * container. `old_contid` is for joins; (u64)-1 otherwise. */
static __always_inline void describe(struct ptags_event *e, struct task_struct *t, __u32 kind,
				     __u64 contid, __u64 set_id, __u64 old_contid)
{
	struct pid *pid, *tgid, *parent;
	unsigned int level;

	/* A reserved record is not zeroed, and what follows the common
	 * part is only filled for some kinds. */
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->pid = BPF_CORE_READ(t, tgid);
	e->tid = BPF_CORE_READ(t, pid);
	pid = BPF_CORE_READ(t, thread_pid);
	level = BPF_CORE_READ(pid, level);
	e->ns_pid = BPF_CORE_READ(pid, numbers[level].nr);
	e->pid_level = level;
	tgid = BPF_CORE_READ(t, group_leader, thread_pid);
	e->ns_tgid = BPF_CORE_READ(tgid, numbers[level].nr);
	/* The parent as the task's namespace sees it, if it does. */
	parent = BPF_CORE_READ(t, real_parent, group_leader, thread_pid);
	if (BPF_CORE_READ(parent, level) >= level &&
	    BPF_CORE_READ(parent, numbers[level].ns) == BPF_CORE_READ(pid, numbers[level].ns))
		e->ns_ppid = BPF_CORE_READ(parent, numbers[level].nr);
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->uid = BPF_CORE_READ(t, cred, uid.val);
	e->loginuid = BPF_CORE_READ(t, loginuid.val);
	e->sessionid = BPF_CORE_READ(t, sessionid);
	e->time_ns = bpf_ktime_get_boot_ns();
	e->contid = contid;
	e->set_id = set_id;
	e->old_contid = old_contid;
	BPF_CORE_READ_STR_INTO(&e->comm, t, comm);
}

/* The daemon drains the rings every 50 ms and before it answers a
 * runtime's end of a container: per-task events need not wake it (one
 * wakeup per exit costs every exit); a drop does. */
static __always_inline void submit(struct ptags_event *e)
{
	bpf_ringbuf_submit(e, e->kind == PTAGS_EVENT_DROP ? 0 : BPF_RB_NO_WAKEUP);
}

static void emit(struct task_struct *t, __u32 kind, __u64 contid, __u64 set_id, __u64 old_contid)
{
	struct ptags_event *e = reserve(kind);

	if (!e)
		return;
	describe(e, t, kind, contid, set_id, old_contid);
	submit(e);
}

#include "namespaces.bpf.h"
#include "devices.bpf.h"

/*
 * A change of a container's members (PTAGS_MEMBER_* units, one atomic
 * add). Rows are never deleted here (user space reaps dead rows), so that
 * a task can never enter a row that is concurrently being deleted. The
 * change that takes the word to zero (the last live or pending member
 * gone) drops the container, unless `quiet` (undoing a refused change).
 * A word that goes negative means a member was counted out twice: counted
 * (PTAGS_LOST_UNDERFLOW), never silently reset.
 */
static void container_add(struct task_struct *t, __u64 contid, __s64 delta, bool quiet)
{
	struct ptags_container *c = bpf_map_lookup_elem(&containers, &contid);
	__s64 after;

	if (!c) {
		count_lost(PTAGS_LOST_CONTAINER);
		return;
	}
	after = __sync_fetch_and_add(&c->members, delta) + delta;
	if (after < 0 || (__s32)after < 0)
		count_lost(PTAGS_LOST_UNDERFLOW);
	else if (after == 0 && delta < 0 && !quiet)
		emit(t, PTAGS_EVENT_DROP, contid, 0, (__u64)-1);
}

/* One more task in a container. */
static void container_enter(__u64 contid)
{
	container_add(NULL, contid, PTAGS_MEMBER_LIVE, true);
}

/* One task fewer; the last one out drops the container. */
static void container_leave(struct task_struct *t, __u64 contid)
{
	container_add(t, contid, -PTAGS_MEMBER_LIVE, false);
}

/* Whether a container has a task in it now. */
static bool has_live_members(const struct ptags_container *c)
{
	return (__s32)c->members > 0;
}

#include "joins.bpf.h"
#include "facts.bpf.h"

/*
 * The fork of a task without state. When the namespaces of host tasks
 * are watched, the child gets storage holding only them, so that its
 * unshares and setns are found; otherwise nothing (most forks end here).
 */
static __always_inline int host_fork(struct task_struct *child)
{
	struct ptags_task *cs;
	struct ptags_ns now;

	if (!ns_watched(0))
		return 0;
	cs = bpf_task_storage_get(&task_state, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!cs) {
		count_lost(PTAGS_LOST_TASK_STORAGE);
		return 0;
	}
	ns_read(child, &now);
	bpf_spin_lock(&cs->lock);
	ns_mark(&cs->ns, &now);
	bpf_spin_unlock(&cs->lock);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ptags_fork, struct task_struct *parent, struct task_struct *child)
{
	struct ptags_task *ps, *cs;
	struct ptags_state state;
	struct ptags_ns parent_ns;
	bool watched;
	/* A new thread copies the pending state too: whichever thread
	 * execs replaces the whole process, so all of them are prepared. */
	bool thread = BPF_CORE_READ(child, tgid) == BPF_CORE_READ(parent, tgid);
	__u32 join_refused_ns;

	/* The creating task, which for a thread is the thread that called
	 * clone, not the group leader. A parent that entered a container's
	 * namespaces joins before its child is made, so that the child
	 * starts in it too. Most forks end here: an unlabelled parent has no
	 * state to hand down. */
	ps = join_by_policy(parent, bpf_task_storage_get(&task_state, parent, 0, 0));
	if (!ps)
		return host_fork(child);
	/* The child has state already: another version of this program,
	 * attached for the instant its replacement takes over, made it. */
	if (bpf_task_storage_get(&task_state, child, 0, 0))
		return 0;
	bpf_spin_lock(&ps->lock);
	state = ps->state;
	join_refused_ns = ps->join_refused_ns;
	bpf_spin_unlock(&ps->lock);
	/* An unshare or setns of the parent since it was last seen is found
	 * now, before the clone's own namespaces are told apart. */
	watched = ns_watched(state.flags);
	if (watched) {
		ns_read(parent, &parent_ns);
		ns_check(parent, ps, &parent_ns, PTAGS_NS_SEEN_FORK);
	}
	if (!thread) {
		state.flags &= PTAGS_TASK_HAS_CONTID;
		state.pending_set_id = 0;
		state.pending_kept_id = 0;
		state.pending_contid = 0;
	}

	cs = bpf_task_storage_get(&task_state, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!cs) {
		count_lost(PTAGS_LOST_TASK_STORAGE);
		return 0;
	}
	/* Counted in before the child points there, as the setter does; a
	 * new thread that may take a pending container at exec is one more
	 * pending member of it. */
	if (state.flags & PTAGS_TASK_HAS_CONTID)
		container_enter(state.contid);
	if (state.flags & PTAGS_TASK_PENDING_CONTID)
		container_add(child, state.pending_contid, PTAGS_MEMBER_PENDING, true);
	bpf_spin_lock(&cs->lock);
	cs->state = state;
	cs->join_refused_ns = join_refused_ns;
	bpf_spin_unlock(&cs->lock);
	if (watched)
		ns_at_clone(parent, child, cs, &parent_ns,
			    state.flags & PTAGS_TASK_HAS_CONTID ? state.contid : (__u64)-1);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ptags_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct ptags_task *s;
	__u64 set_id, old_contid = 0, new_contid = 0;
	bool moved = false, had = false, has;

	/* Joined before the exec prunes, as if it had joined at its setns:
	 * the program starts in the container with the kept tags. */
	s = join_by_policy(p, bpf_task_storage_get(&task_state, p, 0, 0));
	if (!s)
		return 0;
	bpf_spin_lock(&s->lock);
	had = s->state.flags & PTAGS_TASK_HAS_CONTID;
	old_contid = s->state.contid;
	if (s->state.flags & PTAGS_TASK_PENDING) {
		s->state.set_id = s->state.pending_set_id;
		s->state.kept_id = s->state.pending_kept_id;
		if (s->state.flags & PTAGS_TASK_PENDING_CONTID) {
			s->state.contid = s->state.pending_contid;
			s->state.flags |= PTAGS_TASK_HAS_CONTID;
			moved = true;
		}
		s->state.flags &= ~(PTAGS_TASK_PENDING | PTAGS_TASK_PENDING_CONTID);
	} else {
		s->state.set_id = s->state.kept_id;
	}
	set_id = s->state.set_id;
	new_contid = s->state.contid;
	has = s->state.flags & PTAGS_TASK_HAS_CONTID;
	bpf_spin_unlock(&s->lock);

	/* The pending member becomes a live one in a single add; then the
	 * container it leaves counts it out (the same one: no change). */
	if (moved) {
		container_add(p, new_contid, PTAGS_MEMBER_LIVE - PTAGS_MEMBER_PENDING, false);
		if (had)
			container_leave(p, old_contid);
	}
	if (has && process_event_wanted(PTAGS_EVENTS_EXEC, new_contid))
		emit(p, PTAGS_EVENT_EXEC, new_contid, set_id, (__u64)-1);
	if (ns_watched(has ? PTAGS_TASK_HAS_CONTID : 0)) {
		struct ptags_ns now;

		ns_read(p, &now);
		ns_check(p, s, &now, PTAGS_NS_SEEN_EXEC);
	}
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ptags_exit, struct task_struct *p)
{
	struct ptags_task *s = bpf_task_storage_get(&task_state, p, 0, 0);
	__u64 contid, pending_contid, set_id;
	__u32 flags;

	if (!s)
		return 0;
	bpf_spin_lock(&s->lock);
	flags = s->state.flags;
	contid = s->state.contid;
	pending_contid = s->state.pending_contid;
	set_id = s->state.set_id;
	/* Counted out once. The container ID stays: a main thread that
	 * ends before its process does (its other threads live on) must
	 * not take the process out of its container for user space, which
	 * names processes by their main thread. The setter refuses exiting
	 * tasks, so nothing can count this task in again. */
	s->state.flags |= PTAGS_TASK_EXITED;
	bpf_spin_unlock(&s->lock);

	if (flags & PTAGS_TASK_EXITED)
		return 0;
	if (ns_watched(flags)) {
		struct ptags_ns now;

		ns_read(p, &now);
		ns_check(p, s, &now, PTAGS_NS_SEEN_EXIT);
	}
	/* A task that never took its pending container (a runtime's init
	 * that failed before its exec) frees it: its ID ends at once. */
	if (flags & PTAGS_TASK_PENDING_CONTID)
		container_add(p, pending_contid, -PTAGS_MEMBER_PENDING, false);
	if (!(flags & PTAGS_TASK_HAS_CONTID))
		return 0;
	if (process_event_wanted(PTAGS_EVENTS_EXIT, contid))
		emit(p, PTAGS_EVENT_EXIT, contid, set_id, (__u64)-1);
	container_leave(p, contid);
	return 0;
}

/* No children (zombies included) and no other thread. */
static bool alone(struct task_struct *t)
{
	/* Plain loads: no helper call may run under the spin lock. */
	return t->children.next == &t->children && t->signal->nr_threads == 1;
}

/*
 * Sets a task's state from user space, synchronously: run with
 * BPF_PROG_TEST_RUN. The target is named by TID and start time, so that a
 * reused PID is refused (ESRCH) instead of labelled. Container accounting
 * happens here, in the kernel, with the same atomics as fork and exit.
 */
SEC("syscall")
int ptags_set(struct ptags_set_args *a)
{
	struct task_struct *t;
	struct ptags_task *s;
	struct ptags_ns now;
	__u64 old_contid, old_pending_contid;
	__u32 old_flags;
	bool entered = false, claimed = false;
	int refused = 0;

	t = bpf_task_from_pid(a->tid);
	if (!t) {
		a->result = -ESRCH;
		return 0;
	}
	/* A child fork has not finished making: the fork program is still to
	 * copy its parent's state over whatever would be set now, and to
	 * count it in. It is refused as not there yet. */
	if (t->__state & TASK_NEW) {
		bpf_task_release(t);
		a->result = -ESRCH;
		return 0;
	}
	if (t->start_boottime / NSEC_PER_TICK != a->start_ticks) {
		bpf_task_release(t);
		a->result = -ESRCH;
		return 0;
	}
	s = bpf_task_storage_get(&task_state, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		bpf_task_release(t);
		a->result = -ENOMEM;
		return 0;
	}
	if (a->ops & (PTAGS_SET_CONTID | PTAGS_SET_PENDING)) {
		/* Make sure the container exists before any task points to it. */
		if (a->ops & PTAGS_SET_CONTID || a->pending_contid != (__u64)-1) {
			__u64 id = a->ops & PTAGS_SET_CONTID ? a->contid : a->pending_contid;
			struct ptags_container fresh = a->container;

			/* An existing row (live or dropped) is kept: its owner
			 * and parent were decided when it was first made. */
			fresh.members = 0;
			if (bpf_map_update_elem(&containers, &id, &fresh, BPF_NOEXIST) &&
			    !bpf_map_lookup_elem(&containers, &id)) {
				bpf_task_release(t);
				a->result = -ENOMEM;
				return 0;
			}
		}
		/* Count the task in (or as pending) before it points there,
		 * so that an exit in between cannot drop a container it is in
		 * or is about to enter. */
		if (a->ops & PTAGS_SET_CONTID) {
			container_enter(a->contid);
			entered = true;
		}
		if ((a->ops & PTAGS_SET_PENDING) && a->pending_contid != (__u64)-1) {
			container_add(t, a->pending_contid, PTAGS_MEMBER_PENDING, true);
			claimed = true;
		}
	}

	bpf_spin_lock(&s->lock);
	/* Checked under the lock that fork and exit take too: an exit that
	 * already ran has set PF_EXITING, and a fork that already copied this
	 * state has linked its child; a later one copies the new state. */
	if (t->flags & PF_EXITING)
		refused = -ESRCH;
	else if ((a->ops & PTAGS_SET_ALONE) && !alone(t))
		refused = -EBUSY;
	if (refused) {
		bpf_spin_unlock(&s->lock);
		/* Undone quietly: a row this made has had no member, and its
		 * end is not a container's end (the daemon forgets it). */
		if (entered)
			container_add(t, a->contid, -PTAGS_MEMBER_LIVE, true);
		if (claimed)
			container_add(t, a->pending_contid, -PTAGS_MEMBER_PENDING, true);
		bpf_task_release(t);
		a->result = refused;
		return 0;
	}
	old_flags = s->state.flags;
	old_contid = s->state.contid;
	old_pending_contid = s->state.pending_contid;
	if (a->ops & PTAGS_SET_TAGS) {
		s->state.set_id = a->set_id;
		s->state.kept_id = a->kept_id;
	}
	if (a->ops & PTAGS_SET_CONTID) {
		s->state.contid = a->contid;
		s->state.flags |= PTAGS_TASK_HAS_CONTID;
	}
	if (a->ops & PTAGS_SET_PENDING) {
		s->state.pending_set_id = a->pending_set_id;
		s->state.pending_kept_id = a->pending_kept_id;
		s->state.flags |= PTAGS_TASK_PENDING;
		if (a->pending_contid != (__u64)-1) {
			s->state.pending_contid = a->pending_contid;
			s->state.flags |= PTAGS_TASK_PENDING_CONTID;
		} else {
			s->state.flags &= ~PTAGS_TASK_PENDING_CONTID;
		}
	}
	bpf_spin_unlock(&s->lock);

	if (entered && (old_flags & PTAGS_TASK_HAS_CONTID))
		container_leave(t, old_contid);
	/* The namespaces it is in as it enters (NS_INFO); a task watched
	 * before may have changed them since it was last seen. */
	if (a->ops & (PTAGS_SET_CONTID | PTAGS_SET_PENDING)) {
		/* Read on the stack: the context may only be written at
		 * constant offsets from its start. */
		ns_read(t, &now);
		if (ns_watched(PTAGS_TASK_HAS_CONTID))
			ns_check(t, s, &now, PTAGS_NS_SEEN_SET);
		a->ns = now;
	}
	/* A pending container the task will no longer take. */
	if ((a->ops & PTAGS_SET_PENDING) && (old_flags & PTAGS_TASK_PENDING_CONTID))
		container_add(t, old_pending_contid, -PTAGS_MEMBER_PENDING, false);
	bpf_task_release(t);
	a->old_flags = old_flags;
	a->old_contid = old_contid;
	a->result = 0;
	return 0;
}

/*
 * Lists every task with its state, for `ptags ps` and for collecting the
 * tag sets and containers nothing refers to any more. Tasks without state
 * are listed too (flags 0, empty set), so that the list is complete.
 */
SEC("iter/task")
int ptags_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *t = ctx->task;
	struct ptags_task_row row = {};
	struct ptags_task *s;

	if (!t)
		return 0;
	row.pid = t->tgid;
	row.tid = t->pid;
	row.ppid = BPF_CORE_READ(t, real_parent, tgid);
	row.start_ticks = t->start_boottime / NSEC_PER_TICK;
	BPF_CORE_READ_STR_INTO(&row.comm, t, comm);
	ns_read(t, &row.ns);
	/* Every listing is also a sweep: a task that entered a container's
	 * namespaces and has neither forked nor exec'd since joins here, and
	 * the unshares and setns of watched tasks since they were last seen
	 * are found. When host tasks
	 * are watched, a task without storage gets some, with its
	 * namespaces as first seen. */
	s = join_by_policy(t, bpf_task_storage_get(&task_state, t, 0, 0));
	if (!s && ns_watched(0)) {
		s = bpf_task_storage_get(&task_state, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!s)
			count_lost(PTAGS_LOST_TASK_STORAGE);
	}
	if (s) {
		bpf_spin_lock(&s->lock);
		row.state = s->state;
		bpf_spin_unlock(&s->lock);
		if (ns_watched(row.state.flags))
			ns_check(t, s, &row.ns, PTAGS_NS_SEEN_SWEEP);
	}
	bpf_seq_write(ctx->meta->seq, &row, sizeof(row));
	return 0;
}
