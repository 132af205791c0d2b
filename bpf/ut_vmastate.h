/*
 * ut_vmastate.h: the VMA containing one user address, looked up in the
 * kernel at the instant it matters (the end of a failed UFFDIO_MOVE, before
 * the thread returns to user space), so an EINVAL is explained by the VMAs
 * the kernel judged, not by /proc read later (when the process may have
 * unmapped them).
 *
 * The lookup is the kernel's own (lib/maple_tree.c, mtree_range_walk()):
 * mm->mm_mt.ma_root down through range_64/arange_64 nodes to a leaf_64
 * whose slot holds the VMA.  Struct offsets, the node types (enum
 * maple_type) and the pivot counts come from the running kernel's BTF as
 * UT_L_* constants (uffdtrace/kernel/layout.py, VMA_READER_FACTS).
 *
 * Include after ut_pagestate.h (ut_ps_read_u64, ut_ps_current_mm) and
 * uffdtrace_event.h (struct ut_vma_state).  Usable from tracepoint and
 * kprobe/fentry programs: only bpf_probe_read_kernel.
 *
 * Nothing is locked: tracing programs run under rcu_read_lock(), and maple
 * nodes are freed only after an RCU grace period, so a node read here is a
 * node or a dead one (its parent points to itself: UT_VSW_RACED), and the
 * VMA found must contain the address or the walk says it raced.
 */
#ifndef UT_VMASTATE_H
#define UT_VMASTATE_H

/* ---- the encoding of a maple node pointer (include/linux/maple_tree.h,
 * lib/maple_tree.c): #defines, not layout, so not in BTF.  Nodes are 256
 * bytes and 256-byte aligned; the low byte of a pointer to one carries its
 * type in bits 3..6; the root's pointer is also an XArray internal entry
 * (low bits 10) above 4096 (xa_is_node(), mte_mk_root()). ---- */
#define UT_MT_NODE_MASK 255ULL
#define UT_MT_TYPE_SHIFT 3
#define UT_MT_TYPE_MASK 0xf
#define UT_XA_INTERNAL_MASK 3ULL
#define UT_XA_INTERNAL 2ULL
#define UT_XA_NODE_MIN 4096ULL
/* The walk's bounds (the verifier needs them).  A node has at most 16
 * slots (UT_L_MT_R64_PIVOTS + 1); 8 levels hold far more VMAs than
 * vm.max_map_count allows (each level multiplies by 10 or more). */
#define UT_MT_MAX_PIVOTS 16
#define UT_MT_MAX_DEPTH 8

static __always_inline int ut_vs_is_node(u64 entry)
{
	return (entry & UT_XA_INTERNAL_MASK) == UT_XA_INTERNAL && entry > UT_XA_NODE_MIN;
}

/* Where a node keeps its pivots and slots, and how many pivots it has;
 * -1 for a type the walk does not know. */
static __always_inline int ut_vs_node_arrays(u64 node, u32 type, u64 *pivots, u64 *slots,
					     u32 *count, u64 *meta_end)
{
	if (type == UT_L_MAPLE_LEAF_64 || type == UT_L_MAPLE_RANGE_64) {
		*pivots = node + UT_L_MT_R64_PIVOT;
		*slots = node + UT_L_MT_R64_SLOT;
		*count = UT_L_MT_R64_PIVOTS;
		*meta_end = node + UT_L_MT_R64_META_END;
		return 0;
	}
	if (type == UT_L_MAPLE_ARANGE_64) {
		*pivots = node + UT_L_MT_A64_PIVOT;
		*slots = node + UT_L_MT_A64_SLOT;
		*count = UT_L_MT_A64_PIVOTS;
		*meta_end = node + UT_L_MT_A64_META_END;
		return 0;
	}
	return -1;
}

/* ma_data_end(): the offset of a node's last slot in use.  An arange_64
 * node always keeps it in its metadata; a range_64/leaf_64 node only when
 * it is not full (its last pivot is then 0; metadata shares the last
 * slot).  A full node's last slot ends at the node's own end: searching
 * its pivots and else taking the last slot finds the same offset as the
 * kernel, which knows the node's max. */
static __always_inline int ut_vs_data_end(u32 type, u64 pivots, u32 count, u64 meta_end,
					  u32 *end)
{
	u64 last;
	u8 meta = 0;

	if (type != UT_L_MAPLE_ARANGE_64) {
		if (ut_ps_read_u64(pivots + (count - 1) * 8, &last))
			return -1;
		if (last) {
			*end = count;
			return 0;
		}
	}
	if (bpf_probe_read_kernel(&meta, sizeof(meta), (const void *)meta_end))
		return -1;
	*end = meta < count ? meta : count;
	return 0;
}

/* The slot of `node` whose range holds addr: the first pivot >= addr
 * among those in use, else the last slot in use (mtree_range_walk()). */
static __always_inline int ut_vs_offset(u64 pivots, u32 end, u64 addr, u32 *offset)
{
	u64 pivot;

	*offset = end;
	for (u32 i = 0; i < UT_MT_MAX_PIVOTS; i++) {
		if (i >= end)
			break;
		if (ut_ps_read_u64(pivots + i * 8, &pivot))
			return -1;
		if (pivot >= addr) {
			*offset = i;
			break;
		}
	}
	return 0;
}

/* Walk mm->mm_mt down to the leaf slot of addr: the VMA pointer there (0:
 * none), or -1 with vs->where saying why not. */
static __always_inline long ut_vs_lookup(struct ut_vma_state *vs, u64 mm, u64 addr, u64 *vma)
{
	u64 entry, node, parent, pivots, slots, meta_end;
	u32 type, count, end, offset;

	if (ut_ps_read_u64(mm + UT_L_MM_MT_ROOT, &entry)) {
		vs->where = UT_VSW_READ_FAILED;
		return -1;
	}
	/* a root that is no node holds one entry, for index 0 only */
	if (!ut_vs_is_node(entry)) {
		*vma = addr == 0 ? entry : 0;
		return 0;
	}
	for (u32 depth = 0; depth < UT_MT_MAX_DEPTH; depth++) {
		node = entry & ~UT_MT_NODE_MASK;
		type = (entry >> UT_MT_TYPE_SHIFT) & UT_MT_TYPE_MASK;
		vs->depth = depth + 1;
		vs->node_type = type;
		if (ut_vs_node_arrays(node, type, &pivots, &slots, &count, &meta_end)) {
			vs->where = UT_VSW_BAD_NODE;
			return -1;
		}
		if (ut_ps_read_u64(node + UT_L_MT_NODE_PARENT, &parent) ||
		    ut_vs_data_end(type, pivots, count, meta_end, &end) ||
		    ut_vs_offset(pivots, end, addr, &offset) ||
		    ut_ps_read_u64(slots + offset * 8, &entry)) {
			vs->where = UT_VSW_READ_FAILED;
			return -1;
		}
		/* ma_dead_node(): a node removed from the tree points to itself */
		if ((parent & ~UT_MT_NODE_MASK) == node) {
			vs->where = UT_VSW_RACED;
			return -1;
		}
		if (type == UT_L_MAPLE_LEAF_64) {
			/* reserved internal entries (XA_ZERO_ENTRY) are no VMA */
			*vma = (entry & UT_XA_INTERNAL_MASK) == UT_XA_INTERNAL ? 0 : entry;
			return 0;
		}
		/* below the root a child is a plain encoded node pointer
		 * (mt_mk_node(): node | type << 3 | MAPLE_ENODE_NULL), not an
		 * XArray internal entry */
		if (entry <= UT_XA_NODE_MIN) {
			vs->where = UT_VSW_RACED;
			return -1;
		}
	}
	vs->where = UT_VSW_TOO_DEEP;
	return -1;
}

/* The moving fd's userfaultfd context: current->files->fdt->fd[fd]->
 * private_data (0 when it cannot be read; the caller then says "unknown"). */
static __always_inline u64 ut_vs_uffd_ctx(u32 fd)
{
#if UT_L_HAS_TASK_FILES && UT_L_HAS_FILES_FDT && UT_L_HAS_FDTABLE_MAX_FDS && \
	UT_L_HAS_FDTABLE_FD && UT_L_HAS_FILE_PRIVATE_DATA
	u64 files, fdt, fds, file, ctx;
	u32 max_fds = 0;

	if (ut_ps_read_u64((u64)bpf_get_current_task() + UT_L_TASK_FILES, &files) || !files ||
	    ut_ps_read_u64(files + UT_L_FILES_FDT, &fdt) || !fdt ||
	    bpf_probe_read_kernel(&max_fds, sizeof(max_fds),
				  (const void *)(fdt + UT_L_FDTABLE_MAX_FDS)) ||
	    fd >= max_fds || ut_ps_read_u64(fdt + UT_L_FDTABLE_FD, &fds) || !fds ||
	    ut_ps_read_u64(fds + (u64)fd * 8, &file) || !file ||
	    ut_ps_read_u64(file + UT_L_FILE_PRIVATE_DATA, &ctx))
		return 0;
	return ctx;
#else
	return 0;
#endif
}

/* ---- the API ---- */
/* The VMA of user address `addr` in `mm` (a struct mm_struct *); uffd_ctx
 * is the moving fd's userfaultfd context, 0 if unknown. */
static __always_inline void ut_vma_state_read(struct ut_vma_state *vs, u64 mm, u64 addr,
					      u64 uffd_ctx)
{
	u64 vma = 0, ptr;

	__builtin_memset(vs, 0, sizeof(*vs));
	vs->addr = addr;
	if (!mm) {
		vs->where = UT_VSW_NO_MM;
		return;
	}
	if (ut_vs_lookup(vs, mm, addr, &vma))
		return;
	if (!vma) {
		vs->where = UT_VSW_NONE;
		return;
	}
	if (ut_ps_read_u64(vma + UT_L_VMA_VM_START, &vs->vm_start) ||
	    ut_ps_read_u64(vma + UT_L_VMA_VM_END, &vs->vm_end) ||
	    ut_ps_read_u64(vma + UT_L_VMA_VM_FLAGS, &vs->vm_flags)) {
		vs->where = UT_VSW_READ_FAILED;
		return;
	}
	/* VMAs are SLAB_TYPESAFE_BY_RCU: one freed and reused while we read
	 * shows as a VMA elsewhere */
	if (addr < vs->vm_start || addr >= vs->vm_end) {
		vs->where = UT_VSW_RACED;
		return;
	}
	vs->where = UT_VSW_FOUND;
	ut_ps_read_u64(vma + UT_L_VMA_UFFD_CTX, &ptr);
	if (ptr)
		vs->flags |= UT_VS_UFFD_CTX;
	if (uffd_ctx) {
		vs->flags |= UT_VS_UFFD_CTX_KNOWN;
		if (ptr == uffd_ctx)
			vs->flags |= UT_VS_THIS_UFFD;
	}
	ut_ps_read_u64(vma + UT_L_VMA_ANON_VMA, &ptr);
	if (ptr)
		vs->flags |= UT_VS_ANON_VMA;
	ut_ps_read_u64(vma + UT_L_VMA_VM_FILE, &ptr);
	if (ptr)
		vs->flags |= UT_VS_FILE;
	ut_ps_read_u64(vma + UT_L_VMA_VM_OPS, &ptr);
	if (ptr)
		vs->flags |= UT_VS_VM_OPS;
}

#endif /* UT_VMASTATE_H */
