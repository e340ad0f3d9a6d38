/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * What the daemon decides on about a task, and its labels, read in one
 * system call
 * (BPF_PROG_TEST_RUN) instead of /proc/TID/status, stat, loginuid,
 * sessionid, comm and ns/user, which cost 15-25 µs each to open, format
 * and close (issue 21): most of a request's time before this. The values
 * are those /proc prints for a reader in the initial namespaces, where
 * the daemon runs: the objective credentials (real_cred), as
 * /proc/PID/status shows them.
 *
 * Included by ptags.bpf.c.
 */
#ifndef PTAGS_FACTS_BPF_H
#define PTAGS_FACTS_BPF_H

void bpf_rcu_read_lock(void) __ksym;
void bpf_rcu_read_unlock(void) __ksym;

SEC("syscall")
int ptags_facts(struct ptags_facts_args *a)
{
	struct task_struct *t = bpf_task_from_pid(a->tid);
	const struct cred *c;
	struct ptags_task *s;
	struct ptags_state state;
	struct pid *pid;
	unsigned int level;
	char comm[16];

	if (!t) {
		a->result = -ESRCH;
		return 0;
	}
	/* A credential replaced meanwhile (setuid) is freed after an RCU
	 * grace period: this sleepable program holds the RCU read lock
	 * while it reads one. */
	bpf_rcu_read_lock();
	c = t->real_cred;
	a->tgid = t->tgid;
	a->start_ticks = t->start_boottime / NSEC_PER_TICK;
	a->uids[0] = c->uid.val;
	a->uids[1] = c->euid.val;
	a->uids[2] = c->suid.val;
	a->uids[3] = c->fsuid.val;
	a->gids[0] = c->gid.val;
	a->gids[1] = c->egid.val;
	a->gids[2] = c->sgid.val;
	a->gids[3] = c->fsgid.val;
	a->cap_eff = c->cap_effective.val;
	/* The initial user namespace is the only one at level 0. */
	a->user_ns_level = c->user_ns->level;
	bpf_rcu_read_unlock();
	a->loginuid = t->loginuid.val;
	a->sessionid = t->sessionid;
	/* The active PID namespace is that of the task's pid at its own
	 * level: an index the verifier cannot check, so probe reads. */
	pid = t->thread_pid;
	level = BPF_CORE_READ(pid, level);
	a->pid_ns = BPF_CORE_READ(pid, numbers[level].ns, ns.inum);
	/* The context may only be written at constant offsets: read on the
	 * stack, then copied whole. */
	bpf_probe_read_kernel_str(comm, sizeof(comm), t->comm);
	__builtin_memcpy(a->comm, comm, sizeof(comm));
	/* Its labels at the same instant, read whole under the lock. */
	s = bpf_task_storage_get(&task_state, t, 0, 0);
	if (s) {
		bpf_spin_lock(&s->lock);
		state = s->state;
		bpf_spin_unlock(&s->lock);
		a->state = state;
		a->has_state = 1;
	}
	bpf_task_release(t);
	a->result = 0;
	return 0;
}

#endif
