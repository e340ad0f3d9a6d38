/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Device access fenced per container: one cgroup/dev program, attached by
 * a link (BPF_F_ALLOW_MULTI semantics) at the root of the cgroup v2
 * hierarchy, so that it runs for every task beside whatever the runtime
 * attaches, and access needs both to agree. It keys the fence on the
 * task's container ID, which follows the task wherever its cgroup goes.
 * A task without an ID, or whose containers have no list, is let through
 * at once.
 */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ptags_device_list);
} device_lists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ptags_device_key);
	__type(value, __u32);	/* access: BPF_DEVCG_ACC_* bits */
} device_rules SEC(".maps");

struct ptags_device_key ptags_device_key_type;
struct ptags_device_list ptags_device_list_type;
enum ptags_device_type ptags_device_type_type;
enum ptags_device_events ptags_device_events_type;

/* Whether one of container `id`'s exceptions names the device with any
 * of `access` (for a list that allows by default) or grants all of it
 * (for one that denies by default), over the eight ways a rule can name
 * a device (its type or `a`, each number or `*`): eight hash lookups,
 * whatever the number of rules. */
static __always_inline bool device_matches(__u64 id, __u32 type, __u32 major, __u32 minor,
					   __u32 access, bool all_of)
{
	struct ptags_device_key k = { .contid = id };
	__u32 types[2] = { type, PTAGS_DEV_ALL };
	__u32 majors[2] = { major, PTAGS_DEV_ANY };
	__u32 minors[2] = { minor, PTAGS_DEV_ANY };
	int i, j, l;

	for (i = 0; i < 2; i++)
		for (j = 0; j < 2; j++)
			for (l = 0; l < 2; l++) {
				__u32 *a;

				k.type = types[i];
				k.major = majors[j];
				k.minor = minors[l];
				a = bpf_map_lookup_elem(&device_rules, &k);
				if (!a)
					continue;
				if (all_of ? (*a & access) == access : (*a & access) != 0)
					return true;
			}
	return false;
}

/* Whether container `id`'s own list lets the access through. As the
 * devices cgroup: a grant must hold all of the access in one exception
 * (v1's `match_exception`), a denial needs any of it
 * (`match_exception_partial`). */
static __always_inline bool device_allowed_by(__u64 id, const struct ptags_device_list *list,
					      __u32 type, __u32 major, __u32 minor, __u32 access)
{
	if (list->default_allow)
		return !device_matches(id, type, major, minor, access, false);
	return device_matches(id, type, major, minor, access, true);
}

/* Tells the daemon of a denial, at most PTAGS_DEVICE_EVENTS_PER_SEC per
 * list and second: a container probing every device must not flood the
 * ring the other events share. The rest are counted, and the count goes
 * with the next event sent. */
static __always_inline void device_denied(struct bpf_cgroup_dev_ctx *ctx, struct ptags_task *s,
					  struct ptags_device_list *list, __u64 list_id,
					  __u32 type, __u32 access)
{
	__u64 now = bpf_ktime_get_boot_ns();
	struct ptags_event *e;

	if (now - list->window_ns >= 1000000000ULL) {
		list->window_ns = now;
		list->in_window = 0;
	}
	if (__sync_fetch_and_add(&list->in_window, 1) >= PTAGS_DEVICE_EVENTS_PER_SEC) {
		__sync_fetch_and_add(&list->suppressed, 1);
		return;
	}
	e = reserve(PTAGS_EVENT_DEVICE);
	if (!e)
		return;
	describe(e, bpf_get_current_task_btf(), PTAGS_EVENT_DEVICE, s->state.contid,
		 s->state.set_id, (__u64)-1);
	e->dev.list = list_id;
	e->dev.type = type;
	e->dev.major = ctx->major;
	e->dev.minor = ctx->minor;
	e->dev.access = access;
	e->dev.suppressed = __sync_lock_test_and_set(&list->suppressed, 0);
	submit(e);
}

/* PF_IO_WORKER (include/linux/sched.h): an io_uring worker thread. */
#define PTAGS_PF_IO_WORKER 0x00000010

SEC("cgroup/dev")
int ptags_dev(struct bpf_cgroup_dev_ctx *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct ptags_task *s;
	__u32 type = ctx->access_type & 0xffff, access = ctx->access_type >> 16;
	__u64 id;
	int i;

	/* io_uring's workers are threads of the process whose requests they
	 * run, made by create_io_thread(), which the fork tracepoint never
	 * sees: they hold no label of their own. An open they run is the
	 * process's, judged by its leader's container. */
	if (t->flags & PTAGS_PF_IO_WORKER)
		t = t->group_leader;
	s = bpf_task_storage_get(&task_state, t, 0, 0);
	if (!s || !(s->state.flags & PTAGS_TASK_HAS_CONTID))
		return 1;
	id = s->state.contid;
	/* Every list along the chain must agree: a nested list only narrows,
	 * whatever was checked when it was set. */
	for (i = 0; i < MAX_DEPTH; i++) {
		struct ptags_device_list *list = bpf_map_lookup_elem(&device_lists, &id);
		struct ptags_container *c;

		if (list && !device_allowed_by(id, list, type, ctx->major, ctx->minor, access)) {
			device_denied(ctx, s, list, id, type, access);
			return 0;
		}
		c = bpf_map_lookup_elem(&containers, &id);
		if (!c || c->parent == (__u64)-1)
			break;
		id = c->parent;
	}
	return 1;
}
