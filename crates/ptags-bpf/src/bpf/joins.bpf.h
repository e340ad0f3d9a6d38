/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * The setns policy (audit-container-id.md): a task found in the mount
 * namespace of a container that asked for it (`runc exec`, `podman exec`,
 * `nsenter`) joins that container, as its descendants would have.
 *
 * No program watches setns itself: one would run at the exit of every
 * system call of the machine (+24% on getppid, issue 21). The task is
 * found instead where programs already run, before it can start a
 * program or make a child: at its next fork or exec, when it is moved
 * into a cgroup (a runtime puts what it starts into the container's), or
 * at the next listing of all tasks. Between its setns and that moment
 * it is unlabelled, which is the price of the rest of the machine paying
 * nothing.
 *
 * Included by ptags.bpf.c, after the container accounting.
 */
#ifndef PTAGS_JOINS_BPF_H
#define PTAGS_JOINS_BPF_H

/* Whether container `outer` is `id` or one of its ancestors. */
static bool within(__u64 id, __u64 outer)
{
	struct ptags_container *c;
	int i;

	for (i = 0; i < MAX_DEPTH; i++) {
		if (id == outer)
			return true;
		c = bpf_map_lookup_elem(&containers, &id);
		if (!c || c->parent == (__u64)-1)
			return false;
		id = c->parent;
	}
	return false;
}

/* Reports, once per mount namespace entered, that a task of an unrelated
 * container kept its ID there: its every fork and exec there is checked
 * again. The mark goes to the task's children with its state. */
static __always_inline void join_refused(struct task_struct *t, struct ptags_task *s, __u64 ns,
					 __u64 contid, __u64 old_contid)
{
	bool first;

	bpf_spin_lock(&s->lock);
	first = s->join_refused_ns != (__u32)ns;
	s->join_refused_ns = (__u32)ns;
	bpf_spin_unlock(&s->lock);
	if (first)
		emit(t, PTAGS_EVENT_JOIN_REFUSED, contid, 0, old_contid);
}

/*
 * Applies the policy of the mount namespace task `t` is in, if it has
 * one. A task already in the container, or in a container nested in it,
 * stays; a task of a container enclosing it joins it (deeper, never
 * out); a task of an unrelated container keeps its ID (it may not leave
 * its container that way), which is reported. A container whose last
 * task has gone takes no one.
 *
 * `s` is the task's storage as the caller looked it up (NULL: none), so
 * that a fork or exec looks it up once; returned, made if a join needed
 * it.
 */
static __always_inline struct ptags_task *join_by_policy(struct task_struct *t,
							 struct ptags_task *s)
{
	struct ptags_container *c;
	struct ptags_join *j;
	struct ptags_event *e;
	__u64 ns, old_contid = (__u64)-1, contid, set_id, kept_id;
	bool had = false, raced;

	/* Plain loads through BTF pointers (an exiting task's NULL nsproxy
	 * reads as zero, which is no namespace's ID): most forks and execs
	 * end at the lookup that follows. */
	ns = t->nsproxy->mnt_ns->ns.ns_id;
	j = bpf_map_lookup_elem(&joins, &ns);
	if (!j)
		return s;
	contid = j->contid;
	set_id = j->set_id;
	kept_id = j->kept_id;
	if (s) {
		bpf_spin_lock(&s->lock);
		had = s->state.flags & PTAGS_TASK_HAS_CONTID;
		if (had)
			old_contid = s->state.contid;
		bpf_spin_unlock(&s->lock);
	}
	/* The container's own tasks, every time they fork or exec. The
	 * container table is read outside the task's lock, where helpers
	 * may run. */
	if (had && within(old_contid, contid))
		return s;
	c = bpf_map_lookup_elem(&containers, &contid);
	if (!c || !has_live_members(c))
		return s;
	if (had && !within(contid, old_contid)) {
		join_refused(t, s, ns, contid, old_contid);
		return s;
	}
	if (!s) {
		s = bpf_task_storage_get(&task_state, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!s) {
			count_lost(PTAGS_LOST_TASK_STORAGE);
			return NULL;
		}
	}
	/* Counted in first, as in ptags_set: an exit in between cannot
	 * drop the container. */
	container_enter(contid);
	bpf_spin_lock(&s->lock);
	/* A daemon write in between wins; the join is abandoned. */
	raced = (bool)(s->state.flags & PTAGS_TASK_HAS_CONTID) != had ||
		(had && s->state.contid != old_contid);
	if (!raced) {
		s->state.contid = contid;
		s->state.set_id = set_id;
		s->state.kept_id = kept_id;
		s->state.flags |= PTAGS_TASK_HAS_CONTID;
	}
	bpf_spin_unlock(&s->lock);
	if (raced) {
		container_leave(t, contid);
		return s;
	}
	if (had)
		container_leave(t, old_contid);
	e = reserve(PTAGS_EVENT_JOIN);
	if (!e)
		return s;
	describe(e, t, PTAGS_EVENT_JOIN, contid, set_id, old_contid);
	/* The namespaces it joined with go with the event (NS_INFO), read
	 * straight into it: the programs this is inlined in have no stack
	 * to spare. */
	ns_read(t, &e->ns);
	submit(e);
	return s;
}

/* A task moved into a cgroup (the leader, for a whole process): a
 * runtime's `exec` moves what it started into the container's cgroup
 * after it entered the namespaces and before it execs. Rare, so this
 * costs the machine nothing. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(ptags_cgroup_attach, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	join_by_policy(task, bpf_task_storage_get(&task_state, task, 0, 0));
	return 0;
}

#endif
