/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * The namespaces of watched tasks (issue 17): read where the task is seen
 * (fork, exec, exit, the daemon's set, a sweep of all tasks), compared
 * with those it was last seen in, and every difference sent as one
 * PTAGS_EVENT_NS. No program runs on every system call for this: unshare
 * and setns are found at the task's next fork, exec or exit, or by the
 * daemon's periodic sweep, and the event says which.
 *
 * Included by ptags.bpf.c, after the maps and emit helpers.
 */
#ifndef PTAGS_NAMESPACES_BPF_H
#define PTAGS_NAMESPACES_BPF_H

/* Plain loads through BTF pointers (a NULL one on the way reads as
 * zero): cheap enough for every fork of a watched task. */
#define NS_SLOT(ns, slot, p)                                                   \
	do {                                                                   \
		(ns)->inum[slot] = (p)->ns.inum;                               \
		if (bpf_core_field_exists((p)->ns.ns_id))                      \
			(ns)->id[slot] = (p)->ns.ns_id;                        \
		else                                                           \
			(ns)->id[slot] = (p)->ns.inum;                         \
	} while (0)

/* A task's namespaces now; all zero once it has none (exiting). */
static __always_inline void ns_read(struct task_struct *t, struct ptags_ns *ns)
{
	struct nsproxy *nsp = t->nsproxy;
	struct pid_namespace *active, *children;
	struct user_namespace *user;
	struct pid *pid;
	unsigned int level;

	__builtin_memset(ns, 0, sizeof(*ns));
	if (!nsp)
		return;
	/* The active PID namespace is that of the task's pid at its own
	 * level: an index the verifier cannot check on a BTF pointer, so
	 * read with probe reads. */
	pid = t->thread_pid;
	level = BPF_CORE_READ(pid, level);
	active = BPF_CORE_READ(pid, numbers[level].ns);
	children = nsp->pid_ns_for_children;
	user = t->real_cred->user_ns;
	NS_SLOT(ns, PTAGS_NS_CGROUP, nsp->cgroup_ns);
	NS_SLOT(ns, PTAGS_NS_IPC, nsp->ipc_ns);
	NS_SLOT(ns, PTAGS_NS_MNT, nsp->mnt_ns);
	NS_SLOT(ns, PTAGS_NS_NET, nsp->net_ns);
	ns->inum[PTAGS_NS_PID] = BPF_CORE_READ(active, ns.inum);
	if (bpf_core_field_exists(active->ns.ns_id))
		ns->id[PTAGS_NS_PID] = BPF_CORE_READ(active, ns.ns_id);
	else
		ns->id[PTAGS_NS_PID] = ns->inum[PTAGS_NS_PID];
	NS_SLOT(ns, PTAGS_NS_TIME, nsp->time_ns);
	NS_SLOT(ns, PTAGS_NS_USER, user);
	NS_SLOT(ns, PTAGS_NS_UTS, nsp->uts_ns);
	NS_SLOT(ns, PTAGS_NS_PID_FOR_CHILDREN, children);
	NS_SLOT(ns, PTAGS_NS_TIME_FOR_CHILDREN, nsp->time_ns_for_children);
	if (children && children->parent)
		ns->parent_pid = children->parent->ns.inum;
	if (user && user->parent)
		ns->parent_user = user->parent->ns.inum;
}

/* Whether the namespaces of a task with these flags are watched. */
static __always_inline bool ns_watched(__u32 flags)
{
	__u32 zero = 0;
	struct ptags_config *c = bpf_map_lookup_elem(&ptags_config, &zero);

	if (!c || !(c->event_mask & PTAGS_EVENTS_NS))
		return false;
	return (c->event_mask & PTAGS_EVENTS_NS_HOST) ||
	       (flags & (PTAGS_TASK_HAS_CONTID | PTAGS_TASK_PENDING_CONTID));
}

/* The slots in which `now` differs from what `mark` remembers. */
static __always_inline __u32 ns_differ(const struct ptags_ns *now, const struct ptags_ns_mark *mark)
{
	__u32 changed = 0;
	int i;

#pragma unroll
	for (i = 0; i < PTAGS_NS_SLOTS; i++)
		if ((__u32)now->id[i] != mark->id_low[i] || now->inum[i] != mark->inum[i])
			changed |= 1U << i;
	return changed;
}

/* Remembers `now` in `mark`. */
static __always_inline void ns_mark(struct ptags_ns_mark *mark, const struct ptags_ns *now)
{
	int i;

#pragma unroll
	for (i = 0; i < PTAGS_NS_SLOTS; i++) {
		mark->inum[i] = now->inum[i];
		mark->id_low[i] = (__u32)now->id[i];
	}
}

/*
 * Sends a change: `t` is the acting task (for a clone, the parent),
 * `now` the namespaces after, `old_inum` the inode numbers before,
 * `contid` the acting task's container ((u64)-1: none).
 */
static __always_inline void ns_emit(struct task_struct *t, __u32 seen, __u32 changed,
				    const struct ptags_ns *now, const __u32 *old_inum,
				    __u64 contid, __u32 child_pid)
{
	struct ptags_event *e = reserve(PTAGS_EVENT_NS);

	if (!e)
		return;
	describe(e, t, PTAGS_EVENT_NS, contid, 0, (__u64)-1);
	e->ns_seen = seen;
	e->ns_changed = changed;
	e->ns = *now;
	__builtin_memcpy(e->old_ns_inum, old_inum, sizeof(e->old_ns_inum));
	e->child_pid = child_pid;
	submit(e);
}

/*
 * Compares a watched task's namespaces `now` (read by the caller) with
 * those it was last seen in, remembers `now`, and sends what changed.
 * The first sight of a task only remembers.
 */
static __always_inline void ns_check(struct task_struct *t, struct ptags_task *s,
				     const struct ptags_ns *now, __u32 seen)
{
	__u32 old_inum[PTAGS_NS_SLOTS];
	__u32 changed = 0;
	bool known;
	__u64 contid;
	int i;

	if (!now->inum[PTAGS_NS_MNT])
		return;
	bpf_spin_lock(&s->lock);
	known = s->ns.inum[PTAGS_NS_MNT] != 0;
	if (known) {
		changed = ns_differ(now, &s->ns);
#pragma unroll
		for (i = 0; i < PTAGS_NS_SLOTS; i++)
			old_inum[i] = s->ns.inum[i];
	}
	if (!known || changed)
		ns_mark(&s->ns, now);
	contid = s->state.flags & PTAGS_TASK_HAS_CONTID ? s->state.contid : (__u64)-1;
	bpf_spin_unlock(&s->lock);
	if (changed)
		ns_emit(t, seen, changed, now, old_inum, contid, 0);
}

/*
 * At a fork of a watched parent whose namespaces are `parent_now`: the
 * child's namespaces that differ from those the parent hands down (its
 * own, with its PID and time namespaces for children) were made by this
 * clone. Remembers the child's in its storage `cs`.
 */
static __always_inline void ns_at_clone(struct task_struct *parent, struct task_struct *child,
					struct ptags_task *cs, const struct ptags_ns *parent_now,
					__u64 contid)
{
	struct ptags_ns now;
	__u32 handed[PTAGS_NS_SLOTS];
	__u32 changed = 0;
	int i;

	ns_read(child, &now);
	if (!now.inum[PTAGS_NS_MNT] || !parent_now->inum[PTAGS_NS_MNT])
		return;
#pragma unroll
	for (i = 0; i < PTAGS_NS_SLOTS; i++) {
		__u32 from = i == PTAGS_NS_PID ? PTAGS_NS_PID_FOR_CHILDREN
			   : i == PTAGS_NS_TIME ? PTAGS_NS_TIME_FOR_CHILDREN : i;

		handed[i] = parent_now->inum[from];
		if (now.id[i] != parent_now->id[from] || now.inum[i] != handed[i])
			changed |= 1U << i;
	}
	/* A new PID or time namespace is also the child's for its own
	 * children: one namespace, reported once. */
	if (changed & (1U << PTAGS_NS_PID))
		changed &= ~(1U << PTAGS_NS_PID_FOR_CHILDREN);
	if (changed & (1U << PTAGS_NS_TIME))
		changed &= ~(1U << PTAGS_NS_TIME_FOR_CHILDREN);
	bpf_spin_lock(&cs->lock);
	ns_mark(&cs->ns, &now);
	bpf_spin_unlock(&cs->lock);
	if (changed)
		ns_emit(parent, PTAGS_NS_SEEN_CLONE, changed, &now, handed, contid,
			BPF_CORE_READ(child, tgid));
}

#endif
