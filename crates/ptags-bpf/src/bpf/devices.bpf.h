/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Device access fenced per container (issue 19; work in progress): one
 * cgroup/dev program, attached with BPF_F_ALLOW_MULTI semantics (a link)
 * at the root of the cgroup v2 hierarchy, so that it runs beside whatever
 * the runtime attaches and access needs both to agree. It keys the fence
 * on the task's container ID, which follows the task wherever its cgroup
 * goes. A task without an ID, or whose containers have no list, is let
 * through at once.
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

/* The access of container `id`'s exceptions that name the device: the
 * union (for denials) and whether one grants all of `access` (for grants),
 * over the eight ways a rule can name it (type or `a`, number or `*`). */
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

/* Whether container `id`'s own list lets the access through. */
static __always_inline bool device_allowed_by(__u64 id, const struct ptags_device_list *list,
			      __u32 type, __u32 major, __u32 minor, __u32 access)
{
	if (list->default_allow)
		return !device_matches(id, type, major, minor, access, false);
	return device_matches(id, type, major, minor, access, true);
}

SEC("cgroup/dev")
int ptags_dev(struct bpf_cgroup_dev_ctx *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct ptags_task *s = bpf_task_storage_get(&task_state, t, 0, 0);
	__u32 type = ctx->access_type & 0xffff, access = ctx->access_type >> 16;
	__u64 id;
	int i;

	if (!s || !(s->state.flags & PTAGS_TASK_HAS_CONTID))
		return 1;
	id = s->state.contid;
	/* Every list along the chain must agree: a nested list only narrows. */
	for (i = 0; i < MAX_DEPTH; i++) {
		struct ptags_device_list *list = bpf_map_lookup_elem(&device_lists, &id);
		struct ptags_container *c;

		if (list && !device_allowed_by(id, list, type, ctx->major, ctx->minor, access))
			return 0;
		c = bpf_map_lookup_elem(&containers, &id);
		if (!c || c->parent == (__u64)-1)
			break;
		id = c->parent;
	}
	return 1;
}
