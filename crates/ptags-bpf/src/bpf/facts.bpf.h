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

#define EBADF 9
#define ENOTCONN 107
/* get_dumpable(): the low two bits of mm->flags. */
#define MMF_DUMPABLE_MASK 3
#define SUID_DUMP_USER 1

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
	/* As ptrace's access check reads them: a task that dropped its
	 * privileges without exec (not dumpable) is out of reach, and a
	 * main thread that exited is no longer its process's credentials. */
	a->exiting = !!(t->flags & PF_EXITING);
	a->dumpable = (BPF_CORE_READ(t, mm, flags.__mm_flags[0]) & MMF_DUMPABLE_MASK) ==
		      SUID_DUMP_USER;
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

/*
 * The credentials the peer of the caller's connected Unix socket `fd` had
 * when it connected (sk_peer_cred, which SO_PEERCRED reads the IDs of):
 * what a connection may be judged with at most, even if its process has
 * since exec'd a program with file capabilities (issue 21's attack).
 * The socket is the caller's own (the daemon's accepted connection), so
 * it stays open while this runs; its descriptor table is read under RCU.
 */
SEC("syscall")
int ptags_peer(struct ptags_peer_args *a)
{
	struct task_struct *me = bpf_get_current_task_btf();
	struct file **fds, *file = NULL;
	struct socket *sock;
	const struct cred *c;
	unsigned int max;

	bpf_rcu_read_lock();
	fds = BPF_CORE_READ(me, files, fdt, fd);
	max = BPF_CORE_READ(me, files, fdt, max_fds);
	if (a->fd < 0 || (unsigned int)a->fd >= max ||
	    bpf_probe_read_kernel(&file, sizeof(file), fds + a->fd) || !file) {
		bpf_rcu_read_unlock();
		a->result = -EBADF;
		return 0;
	}
	sock = BPF_CORE_READ(file, private_data);
	c = BPF_CORE_READ(sock, sk, sk_peer_cred);
	if (!c) {
		bpf_rcu_read_unlock();
		a->result = -ENOTCONN;
		return 0;
	}
	a->uids[0] = BPF_CORE_READ(c, uid.val);
	a->uids[1] = BPF_CORE_READ(c, euid.val);
	a->uids[2] = BPF_CORE_READ(c, suid.val);
	a->uids[3] = BPF_CORE_READ(c, fsuid.val);
	a->gids[0] = BPF_CORE_READ(c, gid.val);
	a->gids[1] = BPF_CORE_READ(c, egid.val);
	a->gids[2] = BPF_CORE_READ(c, sgid.val);
	a->gids[3] = BPF_CORE_READ(c, fsgid.val);
	a->cap_eff = BPF_CORE_READ(c, cap_effective.val);
	a->user_ns_level = BPF_CORE_READ(c, user_ns, level);
	bpf_rcu_read_unlock();
	a->result = 0;
	return 0;
}

#endif
